// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/**
 * @title ReentrantToken
 * @notice A malicious ERC-20 for the security suite: on its next transfer it calls `target` with
 * `payload` (for example a second claim into the pool), records the outcome and swallows failure,
 * so tests can check that the re-entry was refused while the outer call still completed.
 * @dev HAZARD: {mint} and {arm} are open to anyone. Tests only.
 */
contract ReentrantToken is ERC20 {
    address public target;
    bytes public payload;
    bool public armed;
    /// @notice Whether the last re-entrant call succeeded, and its return or revert data.
    bool public lastReentrySucceeded;
    bytes public lastReentryData;
    uint256 public reentryAttempts;

    constructor() ERC20("Reentrant Token", "RNT") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Makes the next transfer (not mint) call `target_` with `payload_` once.
    function arm(address target_, bytes calldata payload_) external {
        target = target_;
        payload = payload_;
        armed = true;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (armed && from != address(0)) {
            armed = false;
            reentryAttempts += 1;
            (bool ok, bytes memory data) = target.call(payload);
            lastReentrySucceeded = ok;
            lastReentryData = data;
        }
    }
}
