// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IERC20Minimal {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// @title CredanaVault
/// @notice Holds users' collateral for the Credana card and records the card's captured spend as USDC
/// debt. Every state change emits an event that carries everything an off-chain indexer needs to fold
/// the positions without reading storage: who, which token, how much, and the resulting balance.
/// @dev Withdrawals are two-step (request, then finalize after `withdrawalDelayS`), so a withdrawal is
/// visible on-chain before the collateral leaves and the card can stop lending against it at once.
/// A user has at most one pending withdrawal per token; to change it, cancel and request again.
contract CredanaVault {
    bytes32 public constant ADMIN_ROLE = keccak256("ADMIN_ROLE");
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    bytes32 public constant LIQUIDATOR_ROLE = keccak256("LIQUIDATOR_ROLE");

    struct Withdrawal {
        uint256 amount;
        uint64 readyAt;
    }

    /// @notice The debt currency (6 decimals). Never accepted as collateral.
    address public immutable usdc;
    uint64 public withdrawalDelayS;

    mapping(bytes32 role => mapping(address account => bool)) public hasRole;
    mapping(address token => bool) public collateralAllowed;
    /// @notice Collateral held per user and token, pending withdrawals included until finalized.
    mapping(address user => mapping(address token => uint256)) public collateralOf;
    mapping(address user => mapping(address token => Withdrawal)) public pendingWithdrawalOf;
    /// @notice Recorded card spend minus repayments, in USDC base units.
    mapping(address user => uint256) public debtOf;
    /// @notice keccak256(ref) of every spend recorded; a ref is recorded at most once, ever.
    mapping(bytes32 refHash => bool) public spendRecorded;

    uint256 private unlocked = 1;

    event RoleSet(bytes32 indexed role, address indexed account, bool granted);
    event CollateralAllowedSet(address indexed token, bool allowed);
    event WithdrawalDelaySet(uint64 delayS);
    event Deposited(
        address indexed user, address indexed token, address indexed from, uint256 amount, uint256 collateralAfter
    );
    event WithdrawalRequested(address indexed user, address indexed token, uint256 amount, uint64 readyAt);
    event WithdrawalCancelled(address indexed user, address indexed token, uint256 amount);
    event WithdrawalFinalized(address indexed user, address indexed token, uint256 amount, uint256 collateralAfter);
    event SpendRecorded(address indexed user, bytes32 indexed refHash, string ref, uint256 amountUsdc, uint256 debtAfter);
    event Repaid(address indexed user, address indexed payer, uint256 amountUsdc, uint256 debtAfter);
    event Liquidated(
        address indexed user,
        address indexed token,
        address indexed liquidator,
        uint256 collateralSeized,
        uint256 debtCoveredUsdc,
        uint256 pendingWithdrawalReduced
    );

    error Unauthorized(bytes32 role, address account);
    error CollateralNotAllowed(address token);
    error ZeroAmount();
    error InsufficientCollateral(uint256 available, uint256 requested);
    error WithdrawalAlreadyPending(uint256 amount);
    error NoPendingWithdrawal();
    error WithdrawalNotReady(uint64 readyAt);
    error SpendAlreadyRecorded(bytes32 refHash);
    error EmptyRef();
    error ExceedsDebt(uint256 debt, uint256 amount);
    error LengthMismatch();
    error TransferFailed();
    error Reentrancy();

    modifier onlyRole(bytes32 role) {
        if (!hasRole[role][msg.sender]) revert Unauthorized(role, msg.sender);
        _;
    }

    modifier nonReentrant() {
        if (unlocked != 1) revert Reentrancy();
        unlocked = 2;
        _;
        unlocked = 1;
    }

    constructor(address usdc_, uint64 withdrawalDelayS_) {
        usdc = usdc_;
        withdrawalDelayS = withdrawalDelayS_;
        _setRole(ADMIN_ROLE, msg.sender, true);
        emit WithdrawalDelaySet(withdrawalDelayS_);
    }

    // ── Administration ────────────────────────────────────────────────────────────────────────────

    function setRole(bytes32 role, address account, bool granted) external onlyRole(ADMIN_ROLE) {
        _setRole(role, account, granted);
    }

    function setCollateralAllowed(address token, bool allowed) external onlyRole(ADMIN_ROLE) {
        if (token == usdc) revert CollateralNotAllowed(token);
        collateralAllowed[token] = allowed;
        emit CollateralAllowedSet(token, allowed);
    }

    function setWithdrawalDelay(uint64 delayS) external onlyRole(ADMIN_ROLE) {
        withdrawalDelayS = delayS;
        emit WithdrawalDelaySet(delayS);
    }

    // ── Collateral ────────────────────────────────────────────────────────────────────────────────

    function deposit(address token, uint256 amount) external nonReentrant {
        _deposit(msg.sender, token, amount);
    }

    /// @notice Deposits the caller's tokens as collateral of `user`.
    function depositFor(address user, address token, uint256 amount) external nonReentrant {
        _deposit(user, token, amount);
    }

    /// @notice Announces a withdrawal; the collateral stays (and stays seizable) until finalized.
    function requestWithdrawal(address token, uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Withdrawal storage pending = pendingWithdrawalOf[msg.sender][token];
        if (pending.amount != 0) revert WithdrawalAlreadyPending(pending.amount);
        uint256 held = collateralOf[msg.sender][token];
        if (amount > held) revert InsufficientCollateral(held, amount);
        uint64 readyAt = uint64(block.timestamp) + withdrawalDelayS;
        pending.amount = amount;
        pending.readyAt = readyAt;
        emit WithdrawalRequested(msg.sender, token, amount, readyAt);
    }

    function cancelWithdrawal(address token) external {
        Withdrawal storage pending = pendingWithdrawalOf[msg.sender][token];
        uint256 amount = pending.amount;
        if (amount == 0) revert NoPendingWithdrawal();
        delete pendingWithdrawalOf[msg.sender][token];
        emit WithdrawalCancelled(msg.sender, token, amount);
    }

    function finalizeWithdrawal(address token) external nonReentrant {
        Withdrawal memory pending = pendingWithdrawalOf[msg.sender][token];
        if (pending.amount == 0) revert NoPendingWithdrawal();
        if (block.timestamp < pending.readyAt) revert WithdrawalNotReady(pending.readyAt);
        delete pendingWithdrawalOf[msg.sender][token];
        uint256 after_ = collateralOf[msg.sender][token] - pending.amount;
        collateralOf[msg.sender][token] = after_;
        emit WithdrawalFinalized(msg.sender, token, pending.amount, after_);
        _push(token, msg.sender, pending.amount);
    }

    // ── Debt ──────────────────────────────────────────────────────────────────────────────────────

    /// @notice Records one captured card spend as debt. Reverts if `ref` was ever recorded.
    function recordSpend(address user, uint256 amountUsdc, string calldata ref) external onlyRole(SETTLER_ROLE) {
        if (!_recordSpend(user, amountUsdc, ref)) revert SpendAlreadyRecorded(keccak256(bytes(ref)));
    }

    /// @notice Records a batch of spends; a ref already recorded is skipped (no event), so a batch can
    /// be re-sent safely after a crash. Returns how many were recorded now.
    function recordSpends(address[] calldata users, uint256[] calldata amountsUsdc, string[] calldata refs)
        external
        onlyRole(SETTLER_ROLE)
        returns (uint256 recorded)
    {
        if (users.length != amountsUsdc.length || users.length != refs.length) revert LengthMismatch();
        for (uint256 i = 0; i < users.length; i++) {
            if (_recordSpend(users[i], amountsUsdc[i], refs[i])) recorded++;
        }
    }

    /// @notice Repays `user`'s debt with the caller's USDC.
    function repay(address user, uint256 amountUsdc) external nonReentrant {
        if (amountUsdc == 0) revert ZeroAmount();
        uint256 debt = debtOf[user];
        if (amountUsdc > debt) revert ExceedsDebt(debt, amountUsdc);
        debtOf[user] = debt - amountUsdc;
        emit Repaid(user, msg.sender, amountUsdc, debt - amountUsdc);
        _pull(usdc, msg.sender, amountUsdc);
    }

    /// @notice Seizes collateral of an unhealthy position; the liquidator pays `debtCoveredUsdc`.
    /// The health check is off-chain (the liquidator role is the program's own service). A pending
    /// withdrawal larger than what is left is cut down to it, and the cut is part of the event.
    function liquidate(address user, address token, uint256 collateralSeized, uint256 debtCoveredUsdc)
        external
        onlyRole(LIQUIDATOR_ROLE)
        nonReentrant
    {
        uint256 held = collateralOf[user][token];
        if (collateralSeized > held) revert InsufficientCollateral(held, collateralSeized);
        uint256 debt = debtOf[user];
        if (debtCoveredUsdc > debt) revert ExceedsDebt(debt, debtCoveredUsdc);
        uint256 left = held - collateralSeized;
        collateralOf[user][token] = left;
        debtOf[user] = debt - debtCoveredUsdc;
        Withdrawal storage pending = pendingWithdrawalOf[user][token];
        uint256 reduced = 0;
        if (pending.amount > left) {
            reduced = pending.amount - left;
            pending.amount = left;
            if (left == 0) delete pendingWithdrawalOf[user][token];
        }
        emit Liquidated(user, token, msg.sender, collateralSeized, debtCoveredUsdc, reduced);
        if (debtCoveredUsdc > 0) _pull(usdc, msg.sender, debtCoveredUsdc);
        if (collateralSeized > 0) _push(token, msg.sender, collateralSeized);
    }

    // ── Internals ─────────────────────────────────────────────────────────────────────────────────

    function _setRole(bytes32 role, address account, bool granted) private {
        hasRole[role][account] = granted;
        emit RoleSet(role, account, granted);
    }

    function _deposit(address user, address token, uint256 amount) private {
        if (!collateralAllowed[token]) revert CollateralNotAllowed(token);
        if (amount == 0) revert ZeroAmount();
        uint256 after_ = collateralOf[user][token] + amount;
        collateralOf[user][token] = after_;
        emit Deposited(user, token, msg.sender, amount, after_);
        _pull(token, msg.sender, amount);
    }

    function _recordSpend(address user, uint256 amountUsdc, string calldata ref) private returns (bool) {
        if (amountUsdc == 0) revert ZeroAmount();
        if (bytes(ref).length == 0) revert EmptyRef();
        bytes32 refHash = keccak256(bytes(ref));
        if (spendRecorded[refHash]) return false;
        spendRecorded[refHash] = true;
        uint256 after_ = debtOf[user] + amountUsdc;
        debtOf[user] = after_;
        emit SpendRecorded(user, refHash, ref, amountUsdc, after_);
        return true;
    }

    function _pull(address token, address from, uint256 amount) private {
        if (!IERC20Minimal(token).transferFrom(from, address(this), amount)) revert TransferFailed();
    }

    function _push(address token, address to, uint256 amount) private {
        if (!IERC20Minimal(token).transfer(to, amount)) revert TransferFailed();
    }
}
