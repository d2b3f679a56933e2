# ccmitm shell habits: source from ~/.bashrc or ~/.zshrc
#   source /path/to/ccmitm/etc/shell/ccmitm.sh
# Every command is a thin wrapper over ccctl; `ccctl --help` documents the real thing.

ccmitm() {  # [PORT]  start the daemon in the background; PORT sets the intercepting port (PORT+1: reverse)
  if [ -n "${1:-}" ]; then
    ccctl config set proxy.port "$1" && ccctl config set proxy.reverse_port "$(( $1 + 1 ))" || return 1
  fi
  ccctl start
}

ccsub() {  # [PORT]  wire this shell's Claude Code to the proxy (intercepting mode); subagents run on Haiku
  eval "$(ccctl env --subagent --shell "$(basename "${SHELL:-bash}")")"
  if [ -n "${1:-}" ]; then export HTTPS_PROXY="http://127.0.0.1:$1"; fi
  echo "wired: HTTPS_PROXY=$HTTPS_PROXY"
}

ccstock() {  # unwire: plain Anthropic, no proxy
  eval "$(ccctl env --stock --shell "$(basename "${SHELL:-bash}")")"
  echo "unwired: Claude Code talks to Anthropic directly"
}

ccpause()  { ccctl pause; }
ccresume() { ccctl resume; }

# Header mode of the offload lane, and HTTP version: one-line config edits (comments kept,
# validated before they are written) that the running daemon reloads within ~2 s.
cczai_bearer()  { ccctl config set lanes.zai.header_mode authorization; }
cczai_xapikey() { ccctl config set lanes.zai.header_mode x-api-key; }
cch1() { ccctl config set proxy.http2 false; }
cch2() { ccctl config set proxy.http2 true; }

ccverify() { ccctl verify "$@"; }
ccbundle() { ccctl bundle "$@"; }

cch() { claude -p "$@" --model haiku; }   # a quick Haiku call (offloaded)
ccs() { claude -p "$@" --model sonnet; }  # a quick Sonnet call (stays on Anthropic)

ccproof() {  # one Haiku and one Sonnet call through the proxy, then the verify verdict
  ( ccsub >/dev/null
    echo "haiku:  $(cch 'Reply with the single word: ok')"
    echo "sonnet: $(ccs 'Reply with the single word: ok')"
    ccctl verify --since 5m --proof )
}
