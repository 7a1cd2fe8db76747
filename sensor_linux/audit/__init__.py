"""Linux audit source: parse records, assemble events, decode, render (LAUREL-compatible)."""
