"""The configuration: untrusted YAML in, frozen and validated values out (docs/configuration.md).

Imports: the foundation and anycastd.core."""
