"""gitops-bot: manifest diffs on pull requests, deploy on merge, slash commands."""

__version__ = "0.1.0"
