// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @notice The Chainlink read surface the vault uses (a feed proxy).
interface IPriceFeed {
    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
    function decimals() external view returns (uint8);
}

interface IERC20Decimals {
    function decimals() external view returns (uint8);
}

/// @title CredanaVault
/// @notice Holds collateral for the Credana card and records the card's captured spend as USDC debt.
/// Every state change emits an event that carries everything an off-chain indexer needs to fold the
/// positions without reading storage: who, which token, how much, and the resulting balance.
/// @dev A position (collateral and debt together) is keyed by one address, the user's vault account;
/// other wallets of the same user add to it with `depositFor`. Withdrawals are two-step (request, then
/// finalize after `withdrawalDelayS`), so a withdrawal is visible on-chain before the collateral leaves
/// and the card stops lending against it at once. Finalizing needs (1) what stays to cover the on-chain
/// debt at the feeds' prices and each asset's LTV, and (2) an EIP-712 approval from the program's
/// withdrawal signer, bound to the request, with a deadline: the program alone knows the card exposure
/// that is not debt yet (unsettled captures, open holds).
contract CredanaVault is AccessControl, ReentrancyGuard, EIP712 {
    using SafeERC20 for IERC20;

    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    bytes32 public constant LIQUIDATOR_ROLE = keccak256("LIQUIDATOR_ROLE");
    bytes32 public constant WITHDRAWAL_SIGNER_ROLE = keccak256("WITHDRAWAL_SIGNER_ROLE");
    bytes32 public constant WITHDRAWAL_APPROVAL_TYPEHASH = keccak256(
        "WithdrawalApproval(address user,address token,uint256 amount,uint64 requestId,uint64 deadline)"
    );
    uint256 public constant MAX_COLLATERAL_TOKENS = 16;
    /// @notice What a liquidator may seize beyond the debt it covers, at the feed's price (Aave's WETH bonus).
    uint256 public constant LIQUIDATION_BONUS_BPS = 500;
    uint256 private constant BPS = 10_000;

    struct Withdrawal {
        uint256 amount;
        uint64 readyAt;
        /// @notice Unique across the vault: the approval's nonce. A new request gets a new id.
        uint64 requestId;
    }

    struct Collateral {
        bool allowed;
        bool listed;
        uint8 tokenDecimals;
        uint8 priceDecimals;
        uint16 ltvBps;
        /// @notice Weight of the asset's value in the liquidation health check (≥ ltvBps, < 100 %).
        uint16 liquidationThresholdBps;
        uint32 priceAgeMaxS;
        address feed;
    }

    /// @notice The debt currency (6 decimals). Never accepted as collateral.
    address public immutable usdc;
    uint64 public withdrawalDelayS;
    uint64 public withdrawalRequests;

    mapping(address token => Collateral) public collateralConfig;
    /// @notice Every token ever listed (bounded): the on-chain solvency check walks them.
    address[] public collateralTokens;
    /// @notice Collateral held per user and token, pending withdrawals included until finalized.
    mapping(address user => mapping(address token => uint256)) public collateralOf;
    mapping(address user => mapping(address token => Withdrawal)) public pendingWithdrawalOf;
    /// @notice Recorded card spend minus repayments and refunds, in USDC base units.
    mapping(address user => uint256) public debtOf;
    /// @notice Refunds that arrived when the debt was lower; the next spends consume it first.
    mapping(address user => uint256) public refundCreditOf;
    /// @notice keccak256(ref) of every spend recorded; a ref is recorded at most once, ever.
    mapping(bytes32 refHash => bool) public spendRecorded;
    /// @notice keccak256(ref) of every refund recorded; a ref is recorded at most once, ever.
    mapping(bytes32 refHash => bool) public refundRecorded;

    event CollateralSet(
        address indexed token,
        address feed,
        uint16 ltvBps,
        uint16 liquidationThresholdBps,
        uint32 priceAgeMaxS,
        bool allowed
    );
    event WithdrawalDelaySet(uint64 delayS);
    event Deposited(
        address indexed user, address indexed token, address indexed from, uint256 amount, uint256 collateralAfter
    );
    event WithdrawalRequested(
        address indexed user, address indexed token, uint256 amount, uint64 readyAt, uint64 requestId
    );
    event WithdrawalCancelled(address indexed user, address indexed token, uint256 amount);
    event WithdrawalFinalized(address indexed user, address indexed token, uint256 amount, uint256 collateralAfter);
    event SpendRecorded(
        address indexed user,
        bytes32 indexed refHash,
        string ref,
        uint256 amountUsdc,
        uint256 debtAfter,
        uint256 creditUsedUsdc
    );
    event RefundRecorded(
        address indexed user,
        bytes32 indexed refHash,
        string ref,
        uint256 amountUsdc,
        uint256 debtReducedUsdc,
        uint256 debtAfter
    );
    event Repaid(address indexed user, address indexed payer, uint256 amountUsdc, uint256 debtAfter);
    event Liquidated(
        address indexed user,
        address indexed token,
        address indexed liquidator,
        uint256 collateralSeized,
        uint256 debtCoveredUsdc,
        uint256 pendingWithdrawalReduced
    );

    error CollateralNotAllowed(address token);
    error TooManyCollateralTokens();
    error InvalidCollateralConfig();
    error ZeroAmount();
    error InsufficientCollateral(uint256 available, uint256 requested);
    error WithdrawalAlreadyPending(uint256 amount);
    error NoPendingWithdrawal();
    error WithdrawalNotReady(uint64 readyAt);
    error ApprovalExpired(uint64 deadline);
    error InvalidApproval(address signer);
    error PriceUnusable(address token);
    error Undercollateralized(uint256 borrowPowerUsdc, uint256 debtUsdc);
    error SpendAlreadyRecorded(bytes32 refHash);
    error EmptyRef();
    error ExceedsDebt(uint256 debt, uint256 amount);
    error LengthMismatch();
    /// @notice `liquidate` of an account whose collateral at the liquidation threshold still covers its debt.
    error AccountHealthy(uint256 liquidationValueUsdc, uint256 debtUsdc);
    /// @notice `liquidate` seizing more than the covered debt plus the bonus is worth at the feed's price.
    error SeizeTooLarge(uint256 seizeMax, uint256 collateralSeized);

    constructor(address usdc_, uint64 withdrawalDelayS_) EIP712("CredanaVault", "1") {
        usdc = usdc_;
        withdrawalDelayS = withdrawalDelayS_;
        _grantRole(DEFAULT_ADMIN_ROLE, msg.sender);
        emit WithdrawalDelaySet(withdrawalDelayS_);
    }

    // ── Administration ────────────────────────────────────────────────────────────────────────────

    /// @notice Lists (or updates) a collateral token with its price feed, LTV, liquidation threshold and
    /// price age limit. A token stays listed once listed (the solvency check keeps counting what users
    /// hold of it); `allowed` only gates new deposits.
    function setCollateral(
        address token,
        address feed,
        uint16 ltvBps,
        uint16 liquidationThresholdBps,
        uint32 priceAgeMaxS,
        bool allowed
    ) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (token == usdc) revert CollateralNotAllowed(token);
        // A threshold below the LTV would make a position liquidatable the moment it borrows its maximum;
        // at 100 % or more the bonus could never be paid from the collateral.
        if (
            feed == address(0) || ltvBps > liquidationThresholdBps || liquidationThresholdBps >= BPS
                || priceAgeMaxS == 0
        ) revert InvalidCollateralConfig();
        Collateral storage c = collateralConfig[token];
        if (!c.listed) {
            if (collateralTokens.length >= MAX_COLLATERAL_TOKENS) revert TooManyCollateralTokens();
            collateralTokens.push(token);
            c.listed = true;
            c.tokenDecimals = IERC20Decimals(token).decimals();
        }
        c.allowed = allowed;
        c.feed = feed;
        c.priceDecimals = IPriceFeed(feed).decimals();
        c.ltvBps = ltvBps;
        c.liquidationThresholdBps = liquidationThresholdBps;
        c.priceAgeMaxS = priceAgeMaxS;
        emit CollateralSet(token, feed, ltvBps, liquidationThresholdBps, priceAgeMaxS, allowed);
    }

    function setWithdrawalDelay(uint64 delayS) external onlyRole(DEFAULT_ADMIN_ROLE) {
        withdrawalDelayS = delayS;
        emit WithdrawalDelaySet(delayS);
    }

    function collateralAllowed(address token) external view returns (bool) {
        return collateralConfig[token].allowed;
    }

    function collateralTokenCount() external view returns (uint256) {
        return collateralTokens.length;
    }

    // ── Collateral ────────────────────────────────────────────────────────────────────────────────

    function deposit(address token, uint256 amount) external nonReentrant {
        _deposit(msg.sender, token, amount);
    }

    /// @notice Deposits the caller's tokens as collateral of `user` (e.g. a second wallet of the same
    /// user funding the user's vault account).
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
        uint64 requestId = ++withdrawalRequests;
        pending.amount = amount;
        pending.readyAt = readyAt;
        pending.requestId = requestId;
        emit WithdrawalRequested(msg.sender, token, amount, readyAt, requestId);
    }

    function cancelWithdrawal(address token) external {
        Withdrawal storage pending = pendingWithdrawalOf[msg.sender][token];
        uint256 amount = pending.amount;
        if (amount == 0) revert NoPendingWithdrawal();
        delete pendingWithdrawalOf[msg.sender][token];
        emit WithdrawalCancelled(msg.sender, token, amount);
    }

    /// @notice Pays out a pending withdrawal after its delay. `deadline` and `signature` are the
    /// program's EIP-712 approval of exactly this request (user, token, amount, requestId); after the
    /// withdrawal, the collateral left must still cover the on-chain debt at each asset's LTV.
    function finalizeWithdrawal(address token, uint64 deadline, bytes calldata signature) external nonReentrant {
        Withdrawal memory pending = pendingWithdrawalOf[msg.sender][token];
        if (pending.amount == 0) revert NoPendingWithdrawal();
        if (block.timestamp < pending.readyAt) revert WithdrawalNotReady(pending.readyAt);
        if (block.timestamp > deadline) revert ApprovalExpired(deadline);
        bytes32 digest = _hashTypedDataV4(
            keccak256(
                abi.encode(
                    WITHDRAWAL_APPROVAL_TYPEHASH, msg.sender, token, pending.amount, pending.requestId, deadline
                )
            )
        );
        (address signer, ECDSA.RecoverError failure,) = ECDSA.tryRecover(digest, signature);
        if (failure != ECDSA.RecoverError.NoError || !hasRole(WITHDRAWAL_SIGNER_ROLE, signer)) {
            revert InvalidApproval(signer);
        }
        delete pendingWithdrawalOf[msg.sender][token];
        uint256 after_ = collateralOf[msg.sender][token] - pending.amount;
        collateralOf[msg.sender][token] = after_;
        _requireCovered(msg.sender);
        emit WithdrawalFinalized(msg.sender, token, pending.amount, after_);
        IERC20(token).safeTransfer(msg.sender, pending.amount);
    }

    /// @notice The EIP-712 digest the withdrawal signer signs (for off-chain signers and tests).
    function withdrawalApprovalDigest(address user, address token, uint256 amount, uint64 requestId, uint64 deadline)
        external
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(
            keccak256(abi.encode(WITHDRAWAL_APPROVAL_TYPEHASH, user, token, amount, requestId, deadline))
        );
    }

    /// @notice Σ over listed tokens of (collateral − pending withdrawals) × price × LTV, in USDC units
    /// (floored per asset). Reverts when a held asset's price is unusable (not positive, or older than
    /// its limit): a withdrawal is never judged on a stale price.
    function borrowPowerUsdc(address user) public view returns (uint256 total) {
        uint256 n = collateralTokens.length;
        for (uint256 i = 0; i < n; i++) {
            address token = collateralTokens[i];
            uint256 net = collateralOf[user][token] - pendingWithdrawalOf[user][token].amount;
            if (net == 0) continue;
            Collateral memory c = collateralConfig[token];
            total += _weightedUsdc(net, _price(token, c), c, c.ltvBps);
        }
    }

    /// @notice Σ over listed tokens of collateral × price × liquidation threshold, in USDC units (floored
    /// per asset). Pending withdrawals count: they are still seizable. Below `debtOf(user)` the account
    /// is liquidatable. Reverts `PriceUnusable` as `borrowPowerUsdc` does: a stale price never liquidates.
    function liquidationValueUsdc(address user) public view returns (uint256 total) {
        uint256 n = collateralTokens.length;
        for (uint256 i = 0; i < n; i++) {
            address token = collateralTokens[i];
            uint256 held = collateralOf[user][token];
            if (held == 0) continue;
            Collateral memory c = collateralConfig[token];
            total += _weightedUsdc(held, _price(token, c), c, c.liquidationThresholdBps);
        }
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

    /// @notice Records a batch of card refunds: each lowers the debt, and what exceeds the debt becomes
    /// refund credit that later spends consume. A ref already recorded is skipped (no event).
    function recordRefunds(address[] calldata users, uint256[] calldata amountsUsdc, string[] calldata refs)
        external
        onlyRole(SETTLER_ROLE)
        returns (uint256 recorded)
    {
        if (users.length != amountsUsdc.length || users.length != refs.length) revert LengthMismatch();
        for (uint256 i = 0; i < users.length; i++) {
            if (amountsUsdc[i] == 0) revert ZeroAmount();
            if (bytes(refs[i]).length == 0) revert EmptyRef();
            bytes32 refHash = keccak256(bytes(refs[i]));
            if (refundRecorded[refHash]) continue;
            refundRecorded[refHash] = true;
            address user = users[i];
            uint256 debt = debtOf[user];
            uint256 reduced = amountsUsdc[i] < debt ? amountsUsdc[i] : debt;
            debtOf[user] = debt - reduced;
            if (amountsUsdc[i] > reduced) refundCreditOf[user] += amountsUsdc[i] - reduced;
            emit RefundRecorded(user, refHash, refs[i], amountsUsdc[i], reduced, debt - reduced);
            recorded++;
        }
    }

    /// @notice Repays `user`'s debt with the caller's USDC.
    function repay(address user, uint256 amountUsdc) external nonReentrant {
        if (amountUsdc == 0) revert ZeroAmount();
        uint256 debt = debtOf[user];
        if (amountUsdc > debt) revert ExceedsDebt(debt, amountUsdc);
        debtOf[user] = debt - amountUsdc;
        emit Repaid(user, msg.sender, amountUsdc, debt - amountUsdc);
        IERC20(usdc).safeTransferFrom(msg.sender, address(this), amountUsdc);
    }

    /// @notice Seizes collateral of an unhealthy position; the liquidator pays `debtCoveredUsdc`.
    /// The vault judges it itself, at the feeds' answers in this block, so neither a liquidator bug, a
    /// price the liquidator saw on a branch a reorg removed, nor a stolen liquidator key can seize from a
    /// healthy account: it reverts `AccountHealthy` unless `liquidationValueUsdc(user) < debtOf(user)`
    /// (`PriceUnusable` when a held asset's price is stale), and `SeizeTooLarge` when `collateralSeized`
    /// is worth more than `debtCoveredUsdc` × (1 + LIQUIDATION_BONUS_BPS) at `token`'s price (floored).
    /// The close factor is the liquidator's rule, not checked here. A pending withdrawal larger than what
    /// is left is cut down to it, and the cut is part of the event.
    function liquidate(address user, address token, uint256 collateralSeized, uint256 debtCoveredUsdc)
        external
        onlyRole(LIQUIDATOR_ROLE)
        nonReentrant
    {
        uint256 held = collateralOf[user][token];
        if (collateralSeized > held) revert InsufficientCollateral(held, collateralSeized);
        uint256 debt = debtOf[user];
        if (debtCoveredUsdc > debt) revert ExceedsDebt(debt, debtCoveredUsdc);
        uint256 value = liquidationValueUsdc(user);
        if (value >= debt) revert AccountHealthy(value, debt);
        if (collateralSeized > 0) {
            Collateral memory c = collateralConfig[token];
            // covered × (1 + bonus) / price, in the token's base units, floored (the user's side).
            uint256 seizeMax = (debtCoveredUsdc * (BPS + LIQUIDATION_BONUS_BPS) * 10 ** uint256(c.tokenDecimals)
                    * 10 ** uint256(c.priceDecimals)) / (_price(token, c) * 1e6 * BPS);
            if (collateralSeized > seizeMax) revert SeizeTooLarge(seizeMax, collateralSeized);
        }
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
        if (debtCoveredUsdc > 0) IERC20(usdc).safeTransferFrom(msg.sender, address(this), debtCoveredUsdc);
        if (collateralSeized > 0) IERC20(token).safeTransfer(msg.sender, collateralSeized);
    }

    // ── Internals ─────────────────────────────────────────────────────────────────────────────────

    function _deposit(address user, address token, uint256 amount) private {
        if (!collateralConfig[token].allowed) revert CollateralNotAllowed(token);
        if (amount == 0) revert ZeroAmount();
        uint256 after_ = collateralOf[user][token] + amount;
        collateralOf[user][token] = after_;
        emit Deposited(user, token, msg.sender, amount, after_);
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @dev The feed's answer for a listed token, or `PriceUnusable` when it is not positive, stamped in
    /// the future, or older than the token's `priceAgeMaxS`.
    function _price(address token, Collateral memory c) private view returns (uint256) {
        (, int256 answer,, uint256 updatedAt,) = IPriceFeed(c.feed).latestRoundData();
        if (answer <= 0 || updatedAt > block.timestamp || block.timestamp - updatedAt > c.priceAgeMaxS) {
            revert PriceUnusable(token);
        }
        return uint256(answer);
    }

    /// @dev amount × price × 1e6 × weight / (10^tokenDecimals × 10^priceDecimals × 1e4): USDC units, floored.
    function _weightedUsdc(uint256 amount, uint256 price, Collateral memory c, uint16 weightBps)
        private
        pure
        returns (uint256)
    {
        return (amount * price * 1e6 * weightBps)
            / (10 ** uint256(c.tokenDecimals) * 10 ** uint256(c.priceDecimals) * BPS);
    }

    function _requireCovered(address user) private view {
        uint256 debt = debtOf[user];
        if (debt == 0) return;
        uint256 power = borrowPowerUsdc(user);
        if (power < debt) revert Undercollateralized(power, debt);
    }

    function _recordSpend(address user, uint256 amountUsdc, string calldata ref) private returns (bool) {
        if (amountUsdc == 0) revert ZeroAmount();
        if (bytes(ref).length == 0) revert EmptyRef();
        bytes32 refHash = keccak256(bytes(ref));
        if (spendRecorded[refHash]) return false;
        spendRecorded[refHash] = true;
        uint256 credit = refundCreditOf[user];
        uint256 used = credit < amountUsdc ? credit : amountUsdc;
        if (used > 0) refundCreditOf[user] = credit - used;
        uint256 after_ = debtOf[user] + amountUsdc - used;
        debtOf[user] = after_;
        emit SpendRecorded(user, refHash, ref, amountUsdc, after_, used);
        return true;
    }
}
