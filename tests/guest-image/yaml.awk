# yaml.awk: flattens the YAML subset used by NoCloud seeds into one line per
# scalar, "PATH<TAB>VALUE", for the nasvisor-mini guest (busybox awk, no
# python in the guest). Installed in the initramfs as /lib/nasvisor/yaml.awk.
#
# PATH joins mapping keys and sequence indexes (from 0) with ".":
#   users.0.name            alice
#   users.0.groups.1        sudo
#   runcmd.0.2              printf '%s\n' "$1" > /dev/ttyS0 || true
#   ethernets.nic0.routes.0.via   192.0.2.1
# VALUE is the decoded scalar with "\" written as "\\", newline as "\n",
# tab as "\t" and carriage return as "\r", so that every record is one line.
# A key with no value (null, ~, or nothing below it) gives an empty VALUE.
#
# Supported (see README.md): block mappings and sequences by indentation
# (spaces), including a sequence at the same indentation as its parent key
# and "- key: value" items; plain, 'single' and "double" quoted scalars with
# YAML escapes (\" \\ \/ \n \t \r \0 \a \b \e \f \v \xNN \uNNNN \UNNNNNNNN
# \N \_ \L \P; code points become UTF-8); one-line flow collections [..] and
# {..}, nested; literal (|) and folded (>) block scalars with - and +
# chomping; comments; "---", "..." and "%" directive lines; CRLF line ends.
# Not supported: anchors, aliases, tags, merge keys, complex keys, multi-line
# plain or quoted scalars, flow collections spanning lines, tabs as
# indentation, several documents, keys containing "." (they are kept as-is
# and then read as nested paths).
# Errors are reported on stderr as "yaml: line N: ..." and the line is skipped.

function enc(s) {
    gsub(/\\/, "\\\\", s); gsub(/\n/, "\\n", s); gsub(/\t/, "\\t", s); gsub(/\r/, "\\r", s)
    return s
}
function emit(p, v) { print p "\t" enc(v) }
function join(a, b) { return a == "" ? b : a "." b }
function warn(m) { printf "yaml: line %d: %s\n", NR, m > "/dev/stderr"; errors++ }
function ltrim(s) { sub(/^[ \t]+/, "", s); return s }
function rtrim(s) { sub(/[ \t]+$/, "", s); return s }

function hexval(h,   i, n, c) {
    n = 0; h = tolower(h)
    for (i = 1; i <= length(h); i++) {
        c = index("0123456789abcdef", substr(h, i, 1))
        if (c == 0) return -1
        n = n * 16 + c - 1
    }
    return n
}
# UTF-8 bytes of code point n.
function utf8(n) {
    if (n < 128) return sprintf("%c", n)
    if (n < 2048) return sprintf("%c%c", 192 + int(n / 64), 128 + n % 64)
    if (n < 65536) return sprintf("%c%c%c", 224 + int(n / 4096), 128 + int(n / 64) % 64, 128 + n % 64)
    return sprintf("%c%c%c%c", 240 + int(n / 262144), 128 + int(n / 4096) % 64, 128 + int(n / 64) % 64, 128 + n % 64)
}

# The scanner works on the global string S at position P.
function peek() { return substr(S, P, 1) }
function skipws() { while (P <= length(S) && (peek() == " " || peek() == "\t")) P++ }
function rest_is_blank(   r) { r = ltrim(substr(S, P)); return r == "" || r ~ /^#/ }

# A double-quoted scalar; P is on the opening quote.
function dq(   out, c, n, w) {
    out = ""; P++
    while (P <= length(S)) {
        c = peek()
        if (c == "\"") { P++; return out }
        if (c != "\\") { out = out c; P++; continue }
        P++; c = peek(); P++
        if (c == "n") out = out "\n"
        else if (c == "t" || c == "\t") out = out "\t"
        else if (c == "r") out = out "\r"
        else if (c == "\\" || c == "\"" || c == "/" || c == " ") out = out c
        else if (c == "0") { warn("NUL character dropped") }
        else if (c == "a") out = out "\007"
        else if (c == "b") out = out "\b"
        else if (c == "e") out = out "\033"
        else if (c == "f") out = out "\f"
        else if (c == "v") out = out "\v"
        else if (c == "N") out = out utf8(133)
        else if (c == "_") out = out utf8(160)
        else if (c == "L") out = out utf8(8232)
        else if (c == "P") out = out utf8(8233)
        else if (c == "x" || c == "u" || c == "U") {
            w = (c == "x") ? 2 : (c == "u") ? 4 : 8
            n = hexval(substr(S, P, w)); P += w
            if (n < 0) warn("bad \\" c " escape")
            else if (n == 0) warn("NUL character dropped")
            else out = out utf8(n)
        } else { warn("unknown escape \\" c); out = out c }
    }
    warn("unterminated double-quoted scalar")
    return out
}
# A single-quoted scalar; P is on the opening quote.
function sq(   out, c) {
    out = ""; P++
    while (P <= length(S)) {
        c = peek()
        if (c == "'") {
            if (substr(S, P + 1, 1) == "'") { out = out "'"; P += 2; continue }
            P++; return out
        }
        out = out c; P++
    }
    warn("unterminated single-quoted scalar")
    return out
}
function plain(v) {
    if (v == "~" || v == "null" || v == "Null" || v == "NULL") return ""
    return v
}

# A flow node at P, stored under path p.
function fnode(p,   c, start, v) {
    skipws(); c = peek()
    if (c == "[" || c == "{") { flow(p); return }
    if (c == "\"") { emit(p, dq()); return }
    if (c == "'") { emit(p, sq()); return }
    start = P
    while (P <= length(S)) {
        c = peek()
        if (c == "," || c == "]" || c == "}") break
        if (c == "#" && substr(S, P - 1, 1) == " ") break
        P++
    }
    emit(p, plain(rtrim(substr(S, start, P - start))))
}
# A flow key in a flow mapping, up to its ":".
function fkey(   c, start, k) {
    skipws(); c = peek()
    if (c == "\"") k = dq()
    else if (c == "'") k = sq()
    else {
        start = P
        while (P <= length(S)) {
            c = peek()
            if (c == ":" && (P == length(S) || index(" \t,]}", substr(S, P + 1, 1)) > 0)) break
            if (c == "," || c == "}") break
            P++
        }
        k = rtrim(substr(S, start, P - start))
    }
    skipws()
    if (peek() == ":") P++
    return k
}
# A flow collection at P ("[" or "{"), stored under path p.
function flow(p,   c, i, k, cl) {
    c = peek(); P++
    cl = (c == "[") ? "]" : "}"
    i = 0
    while (1) {
        skipws()
        if (P > length(S)) { warn("unterminated flow collection (flow collections must fit on one line)"); return }
        if (peek() == cl) { P++; return }
        if (cl == "]") { fnode(join(p, i)); i++ }
        else {
            k = fkey(); skipws()
            if (peek() == "," || peek() == "}") emit(join(p, k), "")
            else fnode(join(p, k))
        }
        skipws(); c = peek()
        if (P > length(S)) { warn("unterminated flow collection (flow collections must fit on one line)"); return }
        if (c == ",") { P++; continue }
        if (c == cl) { P++; return }
        warn("expected , or " cl " in flow collection"); return
    }
}

# A value after "key:" or "- " (non-empty), at a node whose parent line has
# indentation ind.
function value(p, v, ind) {
    if (v ~ /^[|>]/) {
        if (v !~ /^[|>][-+]?[0-9]?[ \t]*(#.*)?$/) { warn("unsupported block scalar header " v); return }
        blk = 1; blk_path = p; blk_parent = ind; blk_ind = -1; blk_text = ""; blk_nl = 0
        blk_style = substr(v, 1, 1)
        blk_chomp = (v ~ /^.-/) ? "-" : (v ~ /^.\+/ || v ~ /^..\+/) ? "+" : ""
        return
    }
    S = v; P = 1
    if (v ~ /^[[{]/) { flow(p); if (!rest_is_blank()) warn("text after flow collection"); return }
    if (v ~ /^"/) { emit(p, dq()); if (!rest_is_blank()) warn("text after quoted scalar"); return }
    if (v ~ /^'/) { emit(p, sq()); if (!rest_is_blank()) warn("text after quoted scalar"); return }
    if (v ~ /^[&*!]/) warn("anchors, aliases and tags are not supported: " v)
    sub(/[ \t]+#.*$/, "", v)
    emit(p, plain(rtrim(v)))
}

# Splits "key: value" / "key:" into KEY and VAL; returns 0 if C is no mapping
# entry.
function iskey(C,   i, c, n) {
    S = C; P = 1
    c = peek()
    if (c == "\"" || c == "'") {
        KEY = (c == "\"") ? dq() : sq()
        skipws()
        if (peek() != ":") return 0
        P++
        if (P <= length(S) && peek() != " " && peek() != "\t") return 0
        VAL = ltrim(substr(S, P)); if (VAL ~ /^#/) VAL = ""
        return 1
    }
    if (c == "[" || c == "{" || c == "#" || c == "&" || c == "*" || c == "!" || c == "|" || c == ">") return 0
    n = length(C)
    for (i = 1; i <= n; i++) {
        c = substr(C, i, 1)
        if (c == "#" && i > 1 && substr(C, i - 1, 1) ~ /[ \t]/) return 0
        if (c == ":" && (i == n || substr(C, i + 1, 1) ~ /[ \t]/)) {
            KEY = rtrim(substr(C, 1, i - 1))
            VAL = ltrim(substr(C, i + 1)); if (VAL ~ /^#/) VAL = ""
            return 1
        }
    }
    return 0
}

function push(ind, p, kind) { D++; cind[D] = ind; cpath[D] = p; ckind[D] = kind; ccount[D] = 0 }

function entry(d, ind, C,   p, r, off, nind) {
    if (ckind[d] == "s") {
        if (C !~ /^-([ \t]|$)/) { warn("expected a sequence item \"- \""); return }
        p = join(cpath[d], ccount[d]); ccount[d]++
        r = substr(C, 2)
        off = match(r, /[^ \t]/)
        if (off == 0 || substr(r, off, 1) == "#") { pending = 1; pend_path = p; pend_ind = ind; pend_kind = "s"; return }
        r = substr(r, off); nind = ind + off
        if (r ~ /^-([ \t]|$)/) { push(nind, p, "s"); entry(D, nind, r); return }
        if (iskey(r)) { push(nind, p, "m"); entry(D, nind, r); return }
        value(p, r, ind)
        return
    }
    if (!iskey(C)) {
        if (d == 1 && ccount[d] == 0 && C ~ /^[[{]/) { value("", C, -1); return }
        warn("expected \"key: value\""); return
    }
    ccount[d]++
    p = join(cpath[d], KEY)
    if (VAL == "") { pending = 1; pend_path = p; pend_ind = ind; pend_kind = "m"; return }
    value(p, VAL, ind)
}

function endblock(   t) {
    t = blk_text
    if (blk_chomp == "-") sub(/\n+$/, "", t)
    else if (blk_chomp == "") { sub(/\n+$/, "", t); if (blk_text != "") t = t "\n" }
    emit(blk_path, t); blk = 0
}
function blockline(line, ind,   body) {
    if (line ~ /^[ \t]*$/) { if (blk_ind < 0 || length(line) <= blk_ind) body = ""; else body = substr(line, blk_ind + 1) }
    else {
        if (blk_ind < 0) blk_ind = ind
        body = substr(line, blk_ind + 1)
    }
    if (blk_style == "|") { blk_text = blk_text body "\n"; return }
    # folded: lines are joined with a space, an empty line gives a newline,
    # more-indented lines are kept as they are.
    # The line break before the first empty line is dropped, so n empty lines
    # give n newlines.
    if (body == "") { if (blk_nl || blk_text == "") blk_text = blk_text "\n"; blk_nl = 1; return }
    if (blk_text == "" || blk_nl || body ~ /^[ \t]/ || blk_last_more) blk_text = blk_text body
    else { sub(/\n$/, "", blk_text); blk_text = blk_text " " body }
    blk_text = blk_text "\n"; blk_nl = 0; blk_last_more = (body ~ /^[ \t]/)
}

BEGIN { D = 0; pending = 1; pend_path = ""; pend_ind = -1; pend_kind = "m"; blk = 0; errors = 0; done = 0 }
done { next }
{
    sub(/\r$/, "")
    line = $0
    match(line, /^ */); ind = RLENGTH
    C = substr(line, ind + 1)
    if (blk) {
        if (line ~ /^[ \t]*$/ || ind > blk_parent) { blockline(line, ind); next }
        endblock()
    }
    if (C == "" || C ~ /^#/) next
    if (C ~ /^\t/) { warn("tab used for indentation"); next }
    if (ind == 0 && (C ~ /^---([ \t]|$)/ || C ~ /^%/)) {
        if (C ~ /^---[ \t]+[^ \t#]/) { C = ltrim(substr(C, 4)) } else next
    }
    if (ind == 0 && C ~ /^\.\.\.([ \t]|$)/) { done = 1; next }
    if (pending) {
        pending = 0
        if (ind > pend_ind || (ind == pend_ind && pend_kind == "m" && C ~ /^-([ \t]|$)/))
            push(ind, pend_path, (C ~ /^-([ \t]|$)/) ? "s" : "m")
        else emit(pend_path, "")
    }
    while (D > 1 && cind[D] > ind) D--
    if (D > 1 && cind[D] == ind && ckind[D] == "s" && C !~ /^-([ \t]|$)/ && cind[D - 1] == ind) D--
    if (D == 0) push(ind, "", (C ~ /^-([ \t]|$)/) ? "s" : "m")
    if (cind[D] != ind) { warn("bad indentation"); next }
    entry(D, ind, C)
}
END {
    if (blk) endblock()
    if (pending && pend_path != "") emit(pend_path, "")
    exit errors ? 2 : 0
}
