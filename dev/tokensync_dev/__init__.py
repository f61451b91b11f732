"""Development tooling for tokensync; never shipped in the product wheel or image."""
