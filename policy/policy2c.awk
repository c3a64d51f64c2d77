#!/usr/bin/awk -f
# Turn a policy/*.policy file into a C table for src/sandbox-seccomp.c.
#
#   allow NAME...                         allow these system calls
#   allow NAME if COND [and COND]         allow when every COND holds
#   errno NAME ERRNO [if COND [and COND]] fail with ERRNO, do not kill
#
# COND is "argN == V", "argN > V", "argN in V1 V2..." (one rule each)
# or "argN & MASK == V".  Values are C constants or numbers.

function emit(sys, action, errname, n1, c1, n2, c2) {
	printf("\t{ \"%s\", %s, %s, %d, { %s, %s } },\n", sys, action,
	    errname, n1 + n2, c1 == "" ? "NOCMP" : c1,
	    c2 == "" ? "NOCMP" : c2) >> out
}

function cond(s,    f, n) {
	n = split(s, f, " ")
	if (f[1] !~ /^arg[0-5]$/)
		fail("bad argument " f[1])
	idx = substr(f[1], 4)
	if (n == 3 && f[2] == "==")
		return sprintf("CMP(%d, SCMP_CMP_EQ, %s, 0)", idx, f[3])
	if (n == 3 && f[2] == ">")
		return sprintf("CMP(%d, SCMP_CMP_GT, %s, 0)", idx, f[3])
	if (n == 5 && f[2] == "&" && f[4] == "==")
		return sprintf("CMP(%d, SCMP_CMP_MASKED_EQ, %s, %s)", idx,
		    f[3], f[5])
	fail("bad condition: " s)
}

function fail(msg) {
	printf("%s:%d: %s\n", FILENAME, FNR, msg) > "/dev/stderr"
	err = 1
	exit 1
}

BEGIN {
	if (out == "" || name == "")
		fail("usage: awk -v name=NAME -v out=FILE -f policy2c.awk")
	printf("static const struct sandbox_rule %s_rules[] = {\n", name) >> out
}

/^[ \t]*(#|$)/ { next }

# conditional(SYS, ACTION, ERRNAME, FIRST): the rule for the words from
# field FIRST on, "if COND [and COND]".
function conditional(sys, action, errname, first,    rest, i, n, m, parts,
    vals) {
	if ($first != "if")
		fail("one system call per conditional rule")
	rest = ""
	for (i = first + 1; i <= NF; i++)
		rest = rest (rest == "" ? "" : " ") $i
	n = split(rest, parts, / and /)
	if (n > 2)
		fail("at most two conditions")
	if (n == 1 && parts[1] ~ /^arg[0-5] in /) {
		m = split(parts[1], vals, " ")
		for (i = 3; i <= m; i++)
			emit(sys, action, errname, 1,
			    sprintf("CMP(%s, SCMP_CMP_EQ, %s, 0)",
			    substr(vals[1], 4), vals[i]), 0, "")
		return
	}
	emit(sys, action, errname, 1, cond(parts[1]), n == 2 ? 1 : 0,
	    n == 2 ? cond(parts[2]) : "")
}

$1 == "errno" {
	if (NF == 3)
		emit($2, "RULE_ERRNO", $3, 0, "", 0, "")
	else if (NF > 4)
		conditional($2, "RULE_ERRNO", $3, 4)
	else
		fail("errno NAME ERRNO [if COND]")
	next
}

$1 == "allow" {
	ifpos = 0
	for (i = 2; i <= NF; i++)
		if ($i == "if")
			ifpos = i
	if (ifpos == 0) {
		for (i = 2; i <= NF; i++)
			emit($i, "RULE_ALLOW", 0, 0, "", 0, "")
		next
	}
	conditional($2, "RULE_ALLOW", 0, 3)
	next
}

{ fail("unknown rule " $1) }

END {
	if (err)
		exit 1
	printf("\t{ NULL, 0, 0, 0, { NOCMP, NOCMP } }\n};\n") >> out
}
