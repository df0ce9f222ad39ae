"""Hand-written fakes of the real services creed talks to, served on loopback for tests."""
