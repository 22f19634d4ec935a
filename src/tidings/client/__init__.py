"""Clients for applications: ``Publisher`` (sync and async publishing)."""

from .publisher import JsonEncoder, Publisher, PublishResult, encode_json, json_default

__all__ = ["JsonEncoder", "PublishResult", "Publisher", "encode_json", "json_default"]
