"""Lawful access: authentication, the policy decision, consent, audit and alerts."""
