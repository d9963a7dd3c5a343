"""The record a handler gets: :class:`Message` (native, from the Rust core)."""

from ._sluicegate import Message

__all__ = ["Message"]
