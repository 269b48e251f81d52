"""DSA on open-source backbones: lightning indexer, sparse decode, recording, bundled backbone."""
