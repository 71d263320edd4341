"""Notifiers: one small class per channel type behind one interface (see base.py)."""

from alerts.notify.base import (
    DeliveryError,
    Notification,
    Notifier,
    build_notifier,
    classify_http_status,
)

__all__ = ["DeliveryError", "Notification", "Notifier", "build_notifier", "classify_http_status"]
