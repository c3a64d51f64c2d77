#!/usr/bin/awk -f
# Turn a policy/*.policy file into a C table for src/sandbox-seccomp.c.
#
#   allow NAME...                         allow these system calls
#   allow NAME if COND [and COND]...      allow when every COND holds
#   errno NAME ERRNO [if COND [and COND]...] fail with ERRNO, do not kill
#   optional RULE                         RULE, where the call exists
#
# COND is "argN == V", "argN > V", "argN & MASK == V" or "argN in V1
# V2..."; a rule holds at most three conditions, each on another
# argument.  A rule with "in" becomes one rule for each value (several
# "in" conditions: one for each combination).  Values are C constants or
# numbers.
#
# Every NAME must be a system call of the architecture the daemon is
# built for (its __NR_NAME): any other fails the build, with the policy
# file and line.  "optional" is for a call that some 64-bit Linux
# architectures do not have, their C library making another call
# instead (arm64 and riscv64 have no open, stat, poll or epoll_wait and
# use openat, newfstatat, ppoll and epoll_pwait; only x86 has
# arch_prctl): its rules are left out where the call does not exist.  An
# optional NAME must still be a call of some architecture libseccomp
# knows.  The policies do not cover 32-bit architectures (no mmap2 or
# fstatat64): a build for one fails on the calls they lack.

# emit(SYS, ACTION, ERRNAME, N, CMPS): CMPS is N comparisons joined by ";"
function emit(sys, action, errname, n, cmps,    c, i, list) {
	split(cmps, c, ";")
	list = ""
	for (i = 1; i <= 3; i++)
		list = list (i > 1 ? ", " : "") (i <= n ? c[i] : "NOCMP")
	printf("\t{ __NR_%s, \"%s\", %s, %s, %d, { %s } },\n", sys, sys,
	    action, errname, n, list) >> out
}

# The rules of one call are emitted between open_call(SYS) and
# close_call(SYS): where the system has no such call, the build fails,
# or, for an optional rule, the rules are left out.
function open_call(sys) {
	if (sys !~ /^[a-z_][a-z0-9_]*$/)
		fail("bad system call name " sys)
	if (optional)
		printf("#ifndef __SNR_%s\n#error \"%s:%d: no system call " \
		    "%s on any architecture\"\n#endif\n", sys, FILENAME,
		    FNR, sys) >> out
	printf("#ifdef __NR_%s\n", sys) >> out
}

function close_call(sys) {
	if (!optional)
		printf("#else\n#error \"%s:%d: no system call %s on this " \
		    "architecture (one that only some have: an optional " \
		    "rule)\"\n", FILENAME, FNR, sys) >> out
	printf("#endif\n") >> out
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

{ optional = 0 }

$1 == "optional" {
	optional = 1
	sub(/^[ \t]*optional[ \t]+/, "")
}

# conditional(SYS, ACTION, ERRNAME, FIRST): the rules for the words from
# field FIRST on, "if COND [and COND]...".  The comparisons so far are
# kept in rules[1..nr], each a list joined by ";".
function conditional(sys, action, errname, first,    rest, i, j, k, n, m,
    parts, vals, rules, nr, next_rules, nn, args) {
	if ($first != "if")
		fail("one system call per conditional rule")
	rest = ""
	for (i = first + 1; i <= NF; i++)
		rest = rest (rest == "" ? "" : " ") $i
	n = split(rest, parts, / and /)
	if (n > 3)
		fail("at most three conditions")
	nr = 1
	rules[1] = ""
	args = ""
	for (i = 1; i <= n; i++) {
		m = split(parts[i], vals, " ")
		if (index(args, substr(vals[1], 4) ",") != 0)
			fail("two conditions on " vals[1])
		args = args substr(vals[1], 4) ","
		nn = 0
		for (j = 1; j <= nr; j++) {
			if (m >= 3 && vals[2] == "in" && vals[1] ~ /^arg[0-5]$/) {
				for (k = 3; k <= m; k++)
					next_rules[++nn] = rules[j] \
					    (i > 1 ? ";" : "") \
					    sprintf("CMP(%s, SCMP_CMP_EQ, %s, 0)",
					    substr(vals[1], 4), vals[k])
			} else
				next_rules[++nn] = rules[j] (i > 1 ? ";" : "") \
				    cond(parts[i])
		}
		for (j = 1; j <= nn; j++)
			rules[j] = next_rules[j]
		nr = nn
	}
	open_call(sys)
	for (j = 1; j <= nr; j++)
		emit(sys, action, errname, n, rules[j])
	close_call(sys)
}

$1 == "errno" {
	if (NF == 3) {
		open_call($2)
		emit($2, "RULE_ERRNO", $3, 0, "")
		close_call($2)
	} else if (NF > 4)
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
		for (i = 2; i <= NF; i++) {
			open_call($i)
			emit($i, "RULE_ALLOW", 0, 0, "")
			close_call($i)
		}
		next
	}
	conditional($2, "RULE_ALLOW", 0, 3)
	next
}

{ fail("unknown rule " $1) }

END {
	if (err)
		exit 1
	printf("\t{ 0, NULL, 0, 0, 0, { NOCMP, NOCMP, NOCMP } }\n};\n") >> out
}
