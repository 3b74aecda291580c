#!/bin/sh
# Fetches the newest Bun, Deno and uv for x86-64 Linux from their package registries
# (npm, PyPI), whatever version they serve today, and prints the path of the executable
# asked for. Cached per version outside the work tree: a version already fetched is not
# fetched again. Without a registry, the newest cached copy is used, and it says so.
#
#   tests/subjects/fetch.sh bun|deno|uv
set -eu

name=${1:?usage: fetch.sh bun|deno|uv}
cache=${SSLSNIFF_SUBJECTS:-${XDG_CACHE_HOME:-$HOME/.cache}/sslsniff-subjects}
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# The registry's current version of the package, or nothing when it cannot be asked.
latest() {
	case $name in
	bun) timeout 60 npm view bun version 2>/dev/null ;;
	deno) timeout 60 npm view deno version 2>/dev/null ;;
	uv) timeout 120 python3 -m pip index versions uv 2>/dev/null | sed -n 's/^uv (\(.*\))$/\1/p' ;;
	esac
}

# Unpacks version $1 into $2, which the caller renames into place when complete.
fetch() {
	version=$1 dir=$2
	case $name in
	bun | deno)
		case $name in
		bun) package=@oven/bun-linux-x64 exe=package/bin/bun ;;
		deno) package=@deno/linux-x64-glibc exe=package/deno ;;
		esac
		tarball=$(cd "$dir" && timeout 600 npm pack --silent "$package@$version")
		tar -xzf "$dir/$tarball" -C "$dir"
		mv "$dir/$exe" "$dir/$name"
		rm -rf "$dir/$tarball" "$dir/package"
		;;
	uv)
		timeout 600 python3 -m pip download --quiet --no-deps --only-binary :all: \
			--platform manylinux_2_17_x86_64 -d "$dir" "uv==$version"
		python3 -m zipfile -e "$dir"/uv-*.whl "$dir/wheel"
		mv "$dir"/wheel/uv-*.data/scripts/uv "$dir/uv"
		rm -rf "$dir/wheel" "$dir"/uv-*.whl
		;;
	esac
	chmod 755 "$dir/$name"
}

version=$(latest || true)
if [ -z "$version" ]; then
	found=$(ls -d "$cache/$name"-* 2>/dev/null | sort -V | tail -n 1)
	if [ -z "$found" ]; then
		echo "fetch.sh: cannot ask the registry for $name, and none is cached in $cache" >&2
		exit 1
	fi
	echo "fetch.sh: cannot ask the registry for $name; using the cached $found" >&2
	echo "$found/$name"
	exit 0
fi
dest=$cache/$name-$version
if [ ! -x "$dest/$name" ]; then
	tmp=$(mktemp -d "$cache/.$name-XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	fetch "$version" "$tmp"
	rm -rf "$dest"
	mv "$tmp" "$dest"
	trap - EXIT
fi
echo "$dest/$name"
