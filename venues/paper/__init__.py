"""The paper connector: a simulated exchange that serves any venue name."""
