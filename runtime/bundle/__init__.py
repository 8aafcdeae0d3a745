"""The bundle contract: the manifest and its JSON Schema, the rules table, and the decoding, scoring and
preprocessing configs it carries.  Plain data and checks: no imaging library, no engine."""
