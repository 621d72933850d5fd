"""The edge agent: a device's messages under the contract, kept on disk until the broker has them."""

from edge_agent.agent import AGENT_VERSION, Agent
from edge_agent.outbox import OutboxFull

__all__ = ["AGENT_VERSION", "Agent", "OutboxFull"]
