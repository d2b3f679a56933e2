"""Installing around ccmitm: the systemd/launchd service, the haiku-subagent, the ready prompts."""
