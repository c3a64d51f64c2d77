/* placeholder until the policies land */
#include "sandbox.h"

void
sandbox_filter(enum proc_type type)
{
	(void)type;
}

void
sandbox_parent(void)
{
}
