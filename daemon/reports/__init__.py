"""Reading the usage log afterwards: summarize, verify (the audit), REPORT.html, bundle, secret scan."""
