"""Security: CurveZMQ on the sockets, and which devices each client key may act for."""
