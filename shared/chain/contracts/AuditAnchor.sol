// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title AuditAnchor
/// @notice An append-only record of the financial database's audit-log chain head, kept outside that
/// database: each anchor says "audit row `sequence` had hash `head`" and when it was written. Whoever
/// controls the database (a superuser can rewrite an old row and recompute every later hash) cannot
/// change what is recorded here, so a rewrite of anything at or before an anchored row is found by
/// comparing the database with the anchors (docs/operations.md, "Audit anchors").
/// @dev Append-only: no function changes or removes an anchor. Sequences strictly increase, so a
/// repeated or stale send (a job that crashed after broadcasting) reverts instead of adding a second
/// anchor for the same row. Only ANCHORER_ROLE writes; the admin can rotate that key (the HSM key later).
contract AuditAnchor is AccessControl {
    bytes32 public constant ANCHORER_ROLE = keccak256("ANCHORER_ROLE");

    struct Anchor {
        uint64 sequence;
        uint64 anchoredAt;
        bytes32 head;
    }

    Anchor[] private anchors;

    event Anchored(uint256 indexed index, uint64 indexed sequence, bytes32 head, uint64 anchoredAt);

    error SequenceNotIncreasing(uint64 last, uint64 given);
    error EmptyHead();

    constructor(address admin, address anchorer) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(ANCHORER_ROLE, anchorer);
    }

    /// @notice Appends (sequence, head, block time). Reverts unless `sequence` is above the last one.
    function anchor(uint64 sequence, bytes32 head) external onlyRole(ANCHORER_ROLE) {
        if (head == bytes32(0)) revert EmptyHead();
        uint256 n = anchors.length;
        if (n > 0 && sequence <= anchors[n - 1].sequence) {
            revert SequenceNotIncreasing(anchors[n - 1].sequence, sequence);
        }
        uint64 anchoredAt = uint64(block.timestamp);
        anchors.push(Anchor({sequence: sequence, anchoredAt: anchoredAt, head: head}));
        emit Anchored(n, sequence, head, anchoredAt);
    }

    function anchorCount() external view returns (uint256) {
        return anchors.length;
    }

    /// @notice The last anchored sequence (0 when nothing is anchored yet).
    function lastSequence() external view returns (uint64) {
        uint256 n = anchors.length;
        return n == 0 ? 0 : anchors[n - 1].sequence;
    }

    /// @notice Anchors [from, to) (clamped to the count), for paged reads.
    function anchorsBetween(uint256 from, uint256 to) external view returns (Anchor[] memory page) {
        uint256 n = anchors.length;
        if (to > n) to = n;
        if (from >= to) return new Anchor[](0);
        page = new Anchor[](to - from);
        for (uint256 i = from; i < to; i++) {
            page[i - from] = anchors[i];
        }
    }
}
