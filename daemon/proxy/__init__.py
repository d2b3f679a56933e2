"""The data path inside mitmproxy: the Router addon, its per-call state, the failover hop, the Master."""
