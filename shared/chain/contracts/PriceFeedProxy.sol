// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IAggregator {
    function decimals() external view returns (uint8);
    function description() external view returns (string memory);
    function latestRoundData() external view returns (uint80, int256, uint256, uint256, uint80);
    function getRoundData(uint80 roundId) external view returns (uint80, int256, uint256, uint256, uint80);
}

/// @title PriceFeedProxy
/// @notice AggregatorV3Interface in front of an aggregator, like Chainlink's proxy: consumers read it,
/// but the events come from `aggregator()`. Round ids are `phaseId << 64 | aggregatorRoundId`, and the
/// phase goes up each time the proxy is pointed at a new aggregator.
contract PriceFeedProxy {
    address public owner;
    address public aggregator;
    uint16 public phaseId;
    uint256 public constant version = 4;

    event AggregatorConfirmed(address indexed previous, address indexed latest);

    error NotOwner();

    constructor(address aggregator_) {
        owner = msg.sender;
        aggregator = aggregator_;
        phaseId = 1;
        emit AggregatorConfirmed(address(0), aggregator_);
    }

    function confirmAggregator(address aggregator_) external {
        if (msg.sender != owner) revert NotOwner();
        emit AggregatorConfirmed(aggregator, aggregator_);
        aggregator = aggregator_;
        phaseId += 1;
    }

    function decimals() external view returns (uint8) {
        return IAggregator(aggregator).decimals();
    }

    function description() external view returns (string memory) {
        return IAggregator(aggregator).description();
    }

    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        (roundId, answer, startedAt, updatedAt, answeredInRound) = IAggregator(aggregator).latestRoundData();
        uint80 phase = uint80(phaseId) << 64;
        return (phase | roundId, answer, startedAt, updatedAt, phase | answeredInRound);
    }
}
