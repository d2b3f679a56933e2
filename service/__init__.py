"""Service-manager templates (systemd user unit, launchd agent), shipped as package data.

This folder is imported as ``ccmitm.install.templates`` so that ``ccctl service install`` renders
the very files a hand install copies from here, from a source checkout and from a wheel alike.
"""
