"""What the test suite and ``ccctl endurance --against fake`` run against: fake Anthropic and Z.AI
upstreams, a private ccmitmd in a temp dir, free loopback ports. Shipped in the package because
endurance uses it; nothing else in ccmitm imports it."""
