// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/**
 * @title SenderFeeToken
 * @notice An 18-decimal ERC-20 ("Sender Fee Token", "SFEE") that charges the SENDER a 1% fee on
 * top of every transfer: the recipient receives the full amount, the sender is debited
 * `amount + amount / 100` (the fee is burned). A pool paying out such a token loses more than it
 * accounts for, which is what `CompensationPool` must refuse.
 * @dev Mints and burns are not charged. HAZARD: {mint} is open to anyone; tests only.
 */
contract SenderFeeToken is ERC20 {
    /// @notice Fee in basis points charged to the sender on top of each transfer (100 = 1%).
    uint256 public constant FEE_BPS = 100;

    constructor() ERC20("Sender Fee Token", "SFEE") {}

    /// @notice Mints `amount` token units to `to`; anyone may call.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @dev Moves `value` to `to` and burns `FEE_BPS` of it from `from` on top.
    function _update(address from, address to, uint256 value) internal override {
        if (from == address(0) || to == address(0)) {
            super._update(from, to, value);
            return;
        }
        super._update(from, to, value);
        super._update(from, address(0), (value * FEE_BPS) / 10_000);
    }
}
