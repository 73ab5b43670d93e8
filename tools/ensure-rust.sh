#!/bin/sh
# Makes sure `cargo` is at least the workspace's rust-version (Cargo.toml):
# an older cargo (Debian 12's is 1.65) fails on the lockfile or the edition
# with errors that do not say why. When cargo is missing or older, installs
# the stable toolchain with rustup (rustup's installer when rustup itself is
# missing) into ~/.cargo/bin, which the Makefile puts first on the PATH.
set -eu

workspace=$(cd "$(dirname "$0")/.." && pwd)
want=$(sed -n 's/^rust-version = "\([0-9.]*\)"/\1/p' "$workspace/Cargo.toml")
[ -n "$want" ] || {
	echo "ensure-rust: no rust-version in $workspace/Cargo.toml" >&2
	exit 1
}
export PATH="$HOME/.cargo/bin:$PATH"

# The version of the cargo on the PATH, empty if there is none.
cargo_version() {
	cargo --version 2>/dev/null | sed -n 's/^cargo \([0-9][0-9.]*\).*/\1/p'
}

# Whether version $1 is at least $2.
at_least() {
	[ -n "$1" ] && [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

have=$(cargo_version)
if at_least "$have" "$want"; then
	exit 0
fi
if [ -n "$have" ]; then
	echo "ensure-rust: cargo $have ($(command -v cargo)) is older than the workspace's rust-version $want; installing stable with rustup" >&2
else
	echo "ensure-rust: no cargo; installing stable with rustup" >&2
fi
if command -v rustup >/dev/null; then
	rustup toolchain install stable --profile minimal -c clippy,rustfmt
	rustup default stable
else
	curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
		sh -s -- -y --profile minimal -c clippy,rustfmt
fi
have=$(cargo_version)
at_least "$have" "$want" || {
	echo "ensure-rust: cargo is still ${have:-missing} ($(command -v cargo || echo 'not on the PATH')), older than $want" >&2
	exit 1
}
echo "ensure-rust: cargo $have" >&2
