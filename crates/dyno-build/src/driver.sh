#!/bin/bash
# dyno's build driver: Heroku's classic buildpack API, run inside the build dyno as the app's
# user. The daemon binds the build's directories: /app (BUILD_DIR: the slug to be, writable),
# /cache (CACHE_DIR, writable), /env (ENV_DIR: one file per config var), /buildpacks/NN (the
# buildpacks, in order), /meta (what this script tells the daemon: which buildpacks ran and
# what each bin/release printed). A non-zero exit fails the build; its last lines say why.
set -u
export BUILD_DIR=/app CACHE_DIR=/cache ENV_DIR=/env STACK=heroku-22 HOME=/app
cd /app || exit 1

buildpacks=()
for dir in /buildpacks/*/; do
    [ -d "$dir" ] && buildpacks+=("${dir%/}")
done
url_of() { cat "$1/.dyno-buildpack-url" 2>/dev/null || basename "$1"; }
failed() {
    echo " !     $1"
    echo
    echo " !     Push failed"
    exit 1
}
run_one() {
    local dir=$1 name=$2
    for step in detect compile; do
        if [ ! -x "$dir/bin/$step" ]; then
            failed "The buildpack $(url_of "$dir") has no executable bin/$step."
        fi
    done
    echo "-----> $name app detected"
    if ! "$dir/bin/compile" /app /cache /env 2>&1; then
        failed "Push rejected, failed to compile $name app."
    fi
    if [ -x "$dir/bin/release" ]; then
        if ! "$dir/bin/release" /app >"/meta/release-$(basename "$dir").yml"; then
            failed "Push rejected, the release step of $name failed."
        fi
    fi
    url_of "$dir" >>/meta/ran
}

echo "-----> Building on the Heroku-22 stack"
: >/meta/ran
if [ -e /meta/explicit ]; then
    if [ "${#buildpacks[@]}" -gt 1 ]; then
        echo "-----> Using buildpacks:"
        i=1
        for dir in "${buildpacks[@]}"; do
            echo "       $i. $(url_of "$dir")"
            i=$((i + 1))
        done
    else
        echo "-----> Using buildpack: $(url_of "${buildpacks[0]}")"
    fi
    for dir in "${buildpacks[@]}"; do
        if ! name=$("$dir/bin/detect" /app 2>/dev/null); then
            failed "App not compatible with buildpack: $(url_of "$dir")"
        fi
        run_one "$dir" "${name:-$(url_of "$dir")}"
    done
else
    echo "-----> Determining which buildpack to use for this app"
    for dir in "${buildpacks[@]}"; do
        if [ -x "$dir/bin/detect" ] && name=$("$dir/bin/detect" /app 2>/dev/null); then
            run_one "$dir" "${name:-$(url_of "$dir")}"
            exit 0
        fi
    done
    echo " !     No default language could be detected for this app."
    echo "			HINT: This occurs when Heroku cannot detect the buildpack to use for this application automatically."
    echo "			See https://devcenter.heroku.com/articles/buildpacks"
    echo
    echo " !     Push failed"
    exit 1
fi
