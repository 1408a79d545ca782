"""The Slack adapter: Events API (HTTP and Socket Mode) and Web API, plus a local sandbox.

``adapters.slack.sandbox`` is a local Slack-compatible server for demos and tests.
"""
