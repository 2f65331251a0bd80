// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/**
 * @title ReentrantReceiver
 * @notice A malicious holder for the security suite: when it receives ETH it calls `target` with
 * `payload` once (for example the same claim again, or a reclaim), records the outcome and
 * swallows failure. With `rejectPayments` set it refuses ETH instead.
 * @dev Tests only.
 */
contract ReentrantReceiver {
    address public target;
    bytes public payload;
    bool public armed;
    bool public rejectPayments;
    bool public lastReentrySucceeded;
    bytes public lastReentryData;
    uint256 public reentryAttempts;

    function arm(address target_, bytes calldata payload_) external {
        target = target_;
        payload = payload_;
        armed = true;
    }

    function setRejectPayments(bool reject) external {
        rejectPayments = reject;
    }

    /// @notice Forwards an arbitrary call (to fund, reclaim, ... as this contract).
    function execute(address to, uint256 value, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = to.call{value: value}(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        return ret;
    }

    receive() external payable {
        require(!rejectPayments, "ReentrantReceiver: rejecting");
        if (armed) {
            armed = false;
            reentryAttempts += 1;
            (bool ok, bytes memory data) = target.call(payload);
            lastReentrySucceeded = ok;
            lastReentryData = data;
        }
    }
}
