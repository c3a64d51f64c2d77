/*
 * Built into the daemon only in a sanitizer build (make SANITIZE=1).
 *
 * LeakSanitizer stops a process with ptrace at exit, which no process's
 * seccomp policy allows: the daemon runs without it.  The unit tests and
 * fuzz targets, which run unconfined and do not link this file, keep it.
 */
const char *__asan_default_options(void);

const char *
__asan_default_options(void)
{
	return "detect_leaks=0";
}
