"""The control plane above agents: the registry of workflows and where they are loaded from."""
