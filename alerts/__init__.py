"""makewatch's alerting side: dedup, routing, notifiers and the daily digest."""
