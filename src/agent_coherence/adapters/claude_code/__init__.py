"""Claude Code adapter: hook entry point, Bash write detection, installer."""
