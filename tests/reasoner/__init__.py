"""Tests for the reasoner service, its contract, verification and fusion."""
