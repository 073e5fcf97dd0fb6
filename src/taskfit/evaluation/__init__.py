"""Runner, scorers, report."""
