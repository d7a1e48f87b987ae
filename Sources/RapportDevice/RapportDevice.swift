// The command-line device's logic lives here, so tests can reach it.
