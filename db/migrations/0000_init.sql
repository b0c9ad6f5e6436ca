CREATE TABLE "domains" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"domain" text NOT NULL,
	"memo" text DEFAULT '' NOT NULL,
	"api_key_sha256" text NOT NULL,
	"psk_sealed" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"key_rotated_at" timestamp with time zone,
	CONSTRAINT "domains_domain_unique" UNIQUE("domain"),
	CONSTRAINT "domains_domain_lowercase" CHECK ("domains"."domain" = lower("domains"."domain")),
	CONSTRAINT "domains_domain_length" CHECK (char_length("domains"."domain") between 1 and 253)
);
