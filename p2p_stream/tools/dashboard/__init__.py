"""The live terminal dashboard: state from heartbeats and estimates, columns, the view, the app."""
