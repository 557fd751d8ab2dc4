// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title MockAggregator
/// @notice A Chainlink-style *underlying aggregator*: the contract that emits `NewRound` and
/// `AnswerUpdated` (a proxy never does). Its owner transmits answers; a feed that is not updated emits
/// nothing, so staleness can only be judged by time when a decision is made.
contract MockAggregator {
    struct Round {
        int256 answer;
        uint64 startedAt;
        uint64 updatedAt;
    }

    uint8 public immutable decimals;
    string public description;
    uint256 public constant version = 4;
    address public owner;
    uint256 public latestRound;
    mapping(uint256 roundId => Round) private rounds;

    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);
    event NewRound(uint256 indexed roundId, address indexed startedBy, uint256 startedAt);

    error NotOwner();
    error NoData();

    constructor(uint8 decimals_, string memory description_, int256 initialAnswer) {
        decimals = decimals_;
        description = description_;
        owner = msg.sender;
        if (initialAnswer != 0) _transmit(initialAnswer);
    }

    /// @notice Publishes a new round with `answer`, as an OCR transmission would.
    function transmit(int256 answer) external {
        if (msg.sender != owner) revert NotOwner();
        _transmit(answer);
    }

    function latestAnswer() external view returns (int256) {
        return rounds[latestRound].answer;
    }

    function latestTimestamp() external view returns (uint256) {
        return rounds[latestRound].updatedAt;
    }

    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        return getRoundData(uint80(latestRound));
    }

    function getRoundData(uint80 roundId_)
        public
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        Round memory r = rounds[roundId_];
        if (r.updatedAt == 0) revert NoData();
        return (roundId_, r.answer, r.startedAt, r.updatedAt, roundId_);
    }

    function _transmit(int256 answer) private {
        uint256 roundId = latestRound + 1;
        latestRound = roundId;
        rounds[roundId] = Round(answer, uint64(block.timestamp), uint64(block.timestamp));
        emit NewRound(roundId, address(0), block.timestamp);
        emit AnswerUpdated(answer, roundId, block.timestamp);
    }
}
