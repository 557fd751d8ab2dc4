// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IMintable {
    function mint(address to, uint256 amount) external;
    function approve(address spender, uint256 amount) external returns (bool);
}

interface IVault {
    function depositFor(address user, address token, uint256 amount) external;
    function repay(address user, uint256 amountUsdc) external;
}

/// @title BenchBatcher
/// @notice Drives many real vault calls from one transaction, so the indexer benchmark can make tens of
/// thousands of genuine vault events quickly. Uses the test tokens' open mint. Local chains only.
contract BenchBatcher {
    function depositMany(address vault, address token, address[] calldata users, uint256[] calldata amounts)
        external
    {
        uint256 total = 0;
        for (uint256 i = 0; i < amounts.length; i++) total += amounts[i];
        IMintable(token).mint(address(this), total);
        IMintable(token).approve(vault, total);
        for (uint256 i = 0; i < users.length; i++) IVault(vault).depositFor(users[i], token, amounts[i]);
    }

    function repayMany(address vault, address usdc, address[] calldata users, uint256[] calldata amounts) external {
        uint256 total = 0;
        for (uint256 i = 0; i < amounts.length; i++) total += amounts[i];
        IMintable(usdc).mint(address(this), total);
        IMintable(usdc).approve(vault, total);
        for (uint256 i = 0; i < users.length; i++) IVault(vault).repay(users[i], amounts[i]);
    }
}
