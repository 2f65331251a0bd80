// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/**
 * @title FeeOnTransferToken
 * @notice An 18-decimal ERC-20 ("Fee Token", "FEE") that burns 1% of every transfer, to test
 * that contracts credit the balance delta rather than the requested amount.
 * @dev The sender is debited the full amount; the recipient receives `amount - amount / 100`.
 * Mints and burns are not charged. HAZARD: {mint} is open to anyone; tests only.
 */
contract FeeOnTransferToken is ERC20 {
    /// @notice Fee in basis points of each transfer (100 = 1%).
    uint256 public constant FEE_BPS = 100;

    constructor() ERC20("Fee Token", "FEE") {}

    /// @notice Mints `amount` token units to `to`; anyone may call.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @dev Burns `FEE_BPS` of each transfer between two accounts from the transferred amount.
    function _update(address from, address to, uint256 value) internal override {
        if (from == address(0) || to == address(0)) {
            super._update(from, to, value);
            return;
        }
        uint256 fee = (value * FEE_BPS) / 10_000;
        super._update(from, address(0), fee);
        super._update(from, to, value - fee);
    }
}
