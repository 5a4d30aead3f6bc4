/* Guest program: check and fill a batch of pages (guest-fault, convert).
 *
 * 32-bit flat protected mode, no paging; position independent (relative
 * jumps only, data through registers), copied by the host to any GPA.
 *
 * In:  ESI = GPA of the descriptor table, ECX = number of descriptors.
 * Descriptor (16 bytes, guest_common.h PageDesc):
 *   u32 page GPA, u32 flags, u32 expect key, u32 write key
 *   flags bit 0: the words must hold pattern(expect key), else read as zero
 *   flags bit 1: after the check, write pattern(write key) into the words
 *   flags bit 2: skip the check
 *   flags bits 8..11: s; only words i = 0, 2^s, 2*2^s, ... are checked and
 *     written (instructions are costly where KVM emulates them)
 * pattern(key) word i = key ^ (i * 0x9e3779b1)
 * Mismatch: OUT 0xe1 with EAX = GPA of the first bad word, EBX = expected,
 *   ECX = the word read; one report per page, then the batch goes on.
 * End: HLT (the host re-enters with new registers for the next batch).
 * Every loop is bounded: 1024 >> s words per page, ECX pages.
 */
#define PORT_MISMATCH 0xe1
#define GOLDEN 0x9e3779b1
#define WORDS_PER_PAGE 1024

	.section .rodata.gms_guest_pages, "a"
	.code32
	.globl gms_guest_pages_start
	.globl gms_guest_pages_end
gms_guest_pages_start:
	cld
.Lnext_page:
	test %ecx, %ecx
	jz .Ldone
	push %ecx
	/* Per-page locals: 8(%esp) = byte step, 4(%esp) = pattern step, (%esp) = words. */
	mov 4(%esi), %ecx
	shr $8, %ecx
	and $15, %ecx
	mov $4, %ebx
	shl %cl, %ebx
	push %ebx
	mov $GOLDEN, %ebx
	shl %cl, %ebx
	push %ebx
	mov $WORDS_PER_PAGE, %ebx
	shr %cl, %ebx
	push %ebx
	testl $4, 4(%esi)
	jnz .Lwrite
	mov (%esi), %edi
	mov 8(%esi), %ebx
	xor %edx, %edx		/* mask: 0 = expect zero, ~0 = expect pattern */
	testl $1, 4(%esi)
	jz 1f
	not %edx
1:	xor %ebp, %ebp		/* i * GOLDEN */
	mov (%esp), %ecx
.Lverify:
	mov %ebx, %eax
	xor %ebp, %eax
	and %edx, %eax
	cmp (%edi), %eax
	jne .Lmismatch
	add 4(%esp), %ebp
	add 8(%esp), %edi
	dec %ecx
	jnz .Lverify
	jmp .Lwrite
.Lmismatch:
	mov %eax, %ebx
	mov (%edi), %ecx
	mov %edi, %eax
	mov $PORT_MISMATCH, %dx
	out %eax, %dx
.Lwrite:
	testl $2, 4(%esi)
	jz .Lpage_done
	mov (%esi), %edi
	mov 12(%esi), %ebx
	xor %ebp, %ebp
	mov (%esp), %ecx
.Lfill:
	mov %ebx, %eax
	xor %ebp, %eax
	mov %eax, (%edi)
	add 4(%esp), %ebp
	add 8(%esp), %edi
	dec %ecx
	jnz .Lfill
.Lpage_done:
	add $12, %esp
	add $16, %esi
	pop %ecx
	dec %ecx
	jmp .Lnext_page
.Ldone:
	hlt
	jmp .Ldone
gms_guest_pages_end:

	.section .note.GNU-stack, "", @progbits
