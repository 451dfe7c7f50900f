"""Cluster: which daemons are alive, which of them owns a device, and following the live set."""
