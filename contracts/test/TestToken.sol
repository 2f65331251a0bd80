// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/**
 * @title TestToken
 * @notice An 18-decimal ERC-20 ("Test Token", "TST") for demos and tests.
 * @dev HAZARD: {mint} is open to anyone. Never deploy this token where its value matters.
 */
contract TestToken is ERC20 {
    constructor() ERC20("Test Token", "TST") {}

    /// @notice Mints `amount` token units (wei, 18 decimals) to `to`; anyone may call.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
