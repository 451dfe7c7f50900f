"""Bridges that bring wearables in: LSL, replay of recordings, a simulated fleet, conversion to the replay CSV."""
