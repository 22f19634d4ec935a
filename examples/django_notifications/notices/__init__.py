"""Notifications and chat: the example's app."""
