"""What the kernel says: sock_diag, the probe triggers, the FIB, the nft query meter, the service addresses.

Imports: the foundation, anycastd.core and anycastd.config."""
