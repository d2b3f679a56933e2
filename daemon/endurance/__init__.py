"""``ccctl endurance``: soak, parallel, burst and chaos phases, and the evidence they leave."""
