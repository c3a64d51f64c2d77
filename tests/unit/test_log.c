/*
 * log_sanitize(): every byte that is not printable ASCII, and every
 * backslash that does not begin an escape, as \DDD; an escaped line
 * escaped again is unchanged (the parent checks its children's lines so),
 * and an escape is never cut.
 */
#include <sys/types.h>

#include <string.h>

#include "log.h"
#include "tap.h"

static void
escapes(const char *in, const char *want, const char *what)
{
	char	out[256], again[256];

	log_sanitize(out, sizeof(out), in);
	ok(strcmp(out, want) == 0, "%s: \"%s\"", what, out);
	log_sanitize(again, sizeof(again), out);
	ok(strcmp(again, out) == 0, "%s: unchanged when escaped again", what);
}

/* Into every size of buffer: a whole-escape prefix of the full result. */
static void
cuts(const char *in)
{
	char	full[256], out[256], again[256];
	size_t	n, bad = 0;

	log_sanitize(full, sizeof(full), in);
	for (n = 1; n <= strlen(full) + 1; n++) {
		log_sanitize(out, n, in);
		log_sanitize(again, sizeof(again), out);
		if (strlen(out) >= n || strncmp(out, full, strlen(out)) != 0 ||
		    strcmp(again, out) != 0) {
			bad = n;
			break;
		}
	}
	ok(bad == 0, "cut to every length: never inside an escape "
	    "(first bad length: %zu)", bad);
}

int
main(void)
{
	plan(13);
	escapes("query 192.0.2.1 udp type 1", "query 192.0.2.1 udp type 1",
	    "printable text");
	escapes("quo\"te", "quo\"te", "a quote is printable");
	escapes("a\\b", "a\\092b", "a lone backslash");
	escapes("quo\\034te.", "quo\\034te.",
	    "a name's \\DDD escape is kept, not escaped again");
	escapes("x\001\n\x7f\xff", "x\\001\\010\\127\\255", "control bytes");
	escapes("end\\", "end\\092", "a backslash at the end");
	cuts("ab\\034cd\001e\\f\\12");
	return done();
}
