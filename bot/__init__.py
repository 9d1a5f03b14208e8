"""Slack edge: Bolt app, command table, Block Kit views and the Slack notifier."""
