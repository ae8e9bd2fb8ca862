"""Governance: identities and scopes, policies, approval gates, budgets, kill switches, audit.

See docs/governance.md.
"""
