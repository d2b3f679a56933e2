"""What ccmitm writes as it runs: the usage record and its writer, rotating files, the daemon log."""
